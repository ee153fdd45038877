"""Users, sign-in (tokens, passwords) and the news of changed grants."""
