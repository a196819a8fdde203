"""The app as a client of a model served elsewhere: `omnidesk serve`, vllm-omni, Qwen's hosted API."""
