"""What `intrinsic train --placement auto` probes when no probe is given (moves to the pipeline)."""

PROBE_FOR_AUTO = dict(batches=12, update_steps=None)  # the quick gradient probe `train --placement auto` runs
