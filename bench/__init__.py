"""`dlpipe bench`: dlpipe against the model's limit, the work-conserving ceiling and peers.

Everything runs on this machine in one run, the configurations interleaved (A B C A B C...):

- `limit`: the model's forward pass alone on ready uint8 tensors, per batch size and thread count;
- `stages`: each stage of each workload alone, its CPU-seconds per item (the ceiling's inputs);
- `dlpipe`: the whole stack (`dlpipe up` + its own Redis) through HTTP, submit then poll;
- `baseline`: the classical server, one process doing read, preprocess, predict, postprocess in
  turn behind a plain FastAPI endpoint (bench/servers/baseline.py);
- `litserve`, `ray`: the same stage functions and models served by LitServe's and Ray Serve's
  batching, each from its own virtualenv (bench/peers.py), never a dependency of dlpipe.

This package is bench-only: the API and the workers never import it.
"""
