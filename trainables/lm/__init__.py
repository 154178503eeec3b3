"""Language models for a trial: providers, the metered `dspy.LM`, the response cache, adapters, each node's Ollama
and its request slots. Imported by the trial, the race and `grid/`; imports only `registry`, `errors` below it."""
