"""``python -m medcondense`` is the same as the ``medcondense`` command."""

from medcondense.cli import main

if __name__ == "__main__":
    main()
