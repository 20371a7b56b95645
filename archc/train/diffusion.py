"""The diffusion task's noise schedule, in its own package since the tasks package may not import train (the package
graph is a DAG): archc.tasks.noise."""
from archc.tasks.noise import SCHEDULES, Schedule, betas  # noqa: F401
