"""The train stage: its command (__main__: check params, launch), the body every training process
runs (process), and the parts they use: the model (model), Trainer's settings (arguments), the
resource plan (plan, device, cost), checkpoint reuse (fingerprint, checkpoints, seal), the model
kept (keep), export, DVCLive logging (live), peers and worker machines (peers, worker, launch)."""
