"""The shared core every system builds on: which parameters are generated (params), invertible normalisers
(normalise), noise schedules and samplers (diffusion), the resumable training loop with EMA (train_loop), atomic
file IO (io), config checking and the JSON round trip (config), paths, fault injection and timing."""
