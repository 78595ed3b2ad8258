"""What this executable carries and where it keeps it: the payload (weights and manifest), the runtime
pack, the per-user cache, and the loading of the weights into the engine."""
