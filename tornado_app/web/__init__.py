"""The HTTP layer: the application factory and route table, the API documents, the HTTP server."""
