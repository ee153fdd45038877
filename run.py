"""Starts the server, or runs an admin command: the CLI of tornado_app/cli.py, also installed as
`tornado-app` and run by `python -m tornado_app`.

    python run.py                      serve (embedded FerretDB unless MONGODB_URI is set)
    python run.py --workers 4          four processes on one port (needs REDIS_URL)
    python run.py --dev                reload on a change of the code, console logs
    python run.py create-admin --username NAME --email ADDR
    python run.py seed                 demo users, posts with comments, products
"""

from tornado_app.cli import main

if __name__ == "__main__":
    main()
