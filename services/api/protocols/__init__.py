"""Other protocols' front doors onto dlpipe's pipelines (docs/protocols.md): OpenAI's embeddings
(`openai`) and the Open Inference Protocol v2 (`oip_tensors`, `oip_models`). Pure codecs: the
routers (services/api/routers/openai_embeddings.py, oip.py) are the HTTP side, and every request
runs as a normal job (services/api/sync_jobs.py). `errors` gives each protocol its error shape.
"""
