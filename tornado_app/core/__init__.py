"""Pure pieces with no Tornado and no database: time, errors, ids, wire numbers, ETags, JSON bodies."""
