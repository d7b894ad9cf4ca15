"""Command-line alias: ``python -m geofusion.pipeline`` runs :mod:`geofusion.reporting.cli`.

Kept at the package root so the command users type stays short; nothing imports this module
(the layer test in ``tests/test_layers.py`` checks that).
"""

if __name__ == "__main__":
    import sys

    from geofusion.reporting.cli import main

    sys.exit(main())
