"""The Magento protocol library: signing, token exchange, REST client, errors, store-URL safety.

Nothing here imports Flask; the web app and the CLI both build on it.
"""
