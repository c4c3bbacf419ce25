"""Hypothesis settings profiles for the whole suite, chosen by HYPOTHESIS_PROFILE, else `ci`
when CI is set, else `dev`:

- `dev`: 30 examples a property, random (each run explores new inputs);
- `ci`: the same 30, derandomized (a failure in CI reproduces with the same command);
- `thorough`: 500 examples a property, for a long local campaign.

No deadline in any: the suite runs on machines shared with other work, where an example's
time says nothing about the code. Properties whose examples are expensive set a smaller
`max_examples` of their own.
"""

import os

from hypothesis import settings

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
