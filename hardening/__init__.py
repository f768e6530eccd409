"""Hardening tools: fuzzing, soak, chaos and flood runs against rawepoll (``make fuzz`` etc.)."""
