"""dlpipe's shared core: settings, Redis key names, message schemas, codecs, pipeline spec.

Nothing in this package imports torch, so the API image stays slim.
"""
