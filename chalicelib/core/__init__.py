"""The protocol core: routes, errors, grammar and manifest rules.

Nothing in this package imports Chalice, boto3 or a socket library, so the
server doors, the client and the docs generator can all share it.
"""
