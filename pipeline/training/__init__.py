"""Training one model: the loop (`fit`), its optimiser and schedule, the resume state, the time
estimate printed before training, and the curves it logs."""
