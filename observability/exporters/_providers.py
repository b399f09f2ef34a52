"""``gen_ai.provider.name``: LangChain's ``ls_provider`` mapped to the GenAI registry's values.

The one table both the span attribute and the metric label/attribute read, so a span and its
metric points always name the provider the same way. LangChain integrations report their own
spelling (``azure``, ``google_vertexai``, ``amazon_bedrock``, ``mistral``, ``xai`` …); the GenAI
semantic conventions define well-known values (``azure.ai.openai``, ``gcp.vertex_ai``,
``aws.bedrock``, ``mistral_ai``, ``x_ai`` …; ``GenAiProviderNameValues`` in
``opentelemetry-semantic-conventions``). Known spellings are mapped (case-insensitively); any other
value is kept exactly as given, which is what the conventions ask for a provider they do not list
(``ollama``, ``fireworks``, ``together``, ``huggingface`` …). A missing provider reads ``unknown``:
the attribute is Required on inference spans, and the metric label already used that word.
"""

from __future__ import annotations

UNKNOWN_PROVIDER = "unknown"

PROVIDER_NAMES: dict[str, str] = {
    # ls_provider (lower case) -> the registry's well-known value
    "openai": "openai",
    "azure": "azure.ai.openai",  # AzureChatOpenAI / AzureOpenAI
    "azure_openai": "azure.ai.openai",
    "google_vertexai": "gcp.vertex_ai",  # ChatVertexAI, VertexAI
    "vertexai": "gcp.vertex_ai",
    "google_genai": "gcp.gen_ai",  # ChatGoogleGenerativeAI (the Gemini API, any Google GenAI endpoint)
    "bedrock": "aws.bedrock",
    "amazon_bedrock": "aws.bedrock",  # ChatBedrock, ChatBedrockConverse
    "aws_bedrock": "aws.bedrock",
    "mistral": "mistral_ai",  # ChatMistralAI
    "mistralai": "mistral_ai",
    "anthropic": "anthropic",
    "groq": "groq",
    "deepseek": "deepseek",
    "xai": "x_ai",  # ChatXAI
    "ibm": "ibm.watsonx.ai",  # ChatWatsonx
    "watsonx": "ibm.watsonx.ai",
    "cohere": "cohere",
    "perplexity": "perplexity",
}
"""LangChain ``ls_provider`` spelling → ``gen_ai.provider.name`` well-known value."""


def provider_name(ls_provider: str | None) -> str:
    """The ``gen_ai.provider.name`` value for a run's ``ls_provider``: the registry's value when we
    know the spelling, the given value otherwise, ``unknown`` when there is none."""
    if not ls_provider:
        return UNKNOWN_PROVIDER
    return PROVIDER_NAMES.get(ls_provider.strip().lower(), ls_provider)
