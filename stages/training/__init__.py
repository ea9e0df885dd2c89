"""The train stage's parts: resource plan, checkpoint reuse, DVCLive logging, accelerate launcher."""
