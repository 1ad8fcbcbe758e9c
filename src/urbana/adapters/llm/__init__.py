"""LLM adapters: `openai_llm.OpenAILLM` (any OpenAI-compatible server) and
`retrieval.RetrievalResponder` (offline, answers from the knowledge base)."""
