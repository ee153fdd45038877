"""The process: settings, logs, metrics, the event loop, the embedded FerretDB, server and workers."""
