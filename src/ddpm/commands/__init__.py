"""One module per CLI command, each with ``run(args) -> int`` and the library function(s) behind it.

Commands never import each other; what several of them need lives in :mod:`ddpm.command_support`.
"""
