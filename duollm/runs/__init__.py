"""Run directories: checkpoints (safetensors, atomic, resumable), reading a run back, and its precision."""
