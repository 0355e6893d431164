"""One module per ``mvlab`` sub-command; each exposes ``register(subparsers)`` and sets
``func`` on its parser. Errors a user can fix are raised as ``mvlab.errors.UserError``."""
