"""Device-generic torch implementations (the CPU fallback; they run on any torch device)."""
