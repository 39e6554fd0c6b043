"""The compute profiler: analytic FLOPs and bytes (flops), accelerator peaks and measured ceilings (hardware),
step metering (meter), energy (energy) and run reports (report). `python -m profiling --help` lists the commands."""
