"""The servers the bench measures besides dlpipe, each started as its own process:
`baseline` (plain FastAPI, this project's venv), `litserve_app` and `ray_app` (each peer's own venv,
with the repository on PYTHONPATH). All serve POST /v1/pipelines/{name}/jobs, dlpipe's path and
body, and answer synchronously with {"outputs": [{"index", "status", "result", "error"}]}."""
