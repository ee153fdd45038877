"""`python -m tornado_app`: the same CLI as `tornado-app` and `python run.py`."""

from .cli import main

if __name__ == "__main__":
    main()
