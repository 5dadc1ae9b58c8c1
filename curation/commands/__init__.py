"""One module per `curate` subcommand; each exposes `register(subparsers)`."""
