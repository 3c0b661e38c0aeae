"""``python -m ascend_attn.bench``: the bench (``--memory-point``: one memory-growth subprocess)."""
from . import main

raise SystemExit(main())
