"""The web console\x27s static files (``static/``): served by ``imagegate.api.console``."""
