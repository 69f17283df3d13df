"""`dlpipe bench --device sim`: a simulated accelerator, for measuring what dlpipe is for (keeping a
device busy, on full batches, while CPU stages run) on a machine whose only "device" is the
same cores the CPU stages use.

- device.py: the device, a lock every model process shares (fcntl.flock on a file the bench
  makes) held `a + b*n` ms per batch of n while the CPU stays free (a sleep), as a GPU runs
  kernels; it logs its busy intervals, and busylog.py computes duty cycle and batches from them;
- models.py: the simulated models (a detector and a classifier: cheap real outputs, the
  device's time);
- stages.py: the chain's CPU stage that decodes the original again and crops what model A found;
- pipelines.py: the pipelines file of a run (the chain and the one-model shape), the published
  GPU batch curve the costs come from, and the device's ceiling at full batches.

Nothing here is imported by the API or the workers, except through a pipelines file that names it.
"""
