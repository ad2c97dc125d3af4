"""The Allmende volunteer client: the engine (lease → verify → compute → submit), the torch
task code, and the researcher's dataset download."""
