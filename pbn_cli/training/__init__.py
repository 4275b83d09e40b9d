"""`pbn train`: the loop, its session (run, resume, Ctrl-C), samplers and loader, presets, torchrun set-up."""
