"""The official OpenAI Python SDK against Bedrock, Vertex AI and Cohere through the gateway:
only base_url changes. argv: base_url, then chat models, then `--embed` and embedding models."""
import json
import sys

from openai import OpenAI

base, *rest = sys.argv[1:]
split = rest.index("--embed")
chat_models, embed_models = rest[:split], rest[split + 1:]
client = OpenAI(base_url=base, api_key="sk-client-token", max_retries=0)

tools = [{
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]

for model in chat_models:
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"echo:plain {model}"}], max_tokens=50)
    assert resp.choices[0].message.content == f"plain {model}", resp
    assert resp.usage.total_tokens > 0, resp.usage

    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "echo:streamed words arrive"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.strip() == "streamed words arrive", (model, text)

    ask = [{"role": "user", "content": 'tool:weather {"city": "Oslo"}'}]
    first = client.chat.completions.create(model=model, messages=ask, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "weather", first
    assert json.loads(call.function.arguments) == {"city": "Oslo"}, call
    second = client.chat.completions.create(model=model, tools=tools, messages=ask + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "snow, -3 C"},
    ])
    assert "snow, -3 C" in second.choices[0].message.content, second

    # Tool calls arrive in pieces when streamed; the SDK's deltas add up to the call.
    stream = client.chat.completions.create(model=model, messages=ask, tools=tools, stream=True)
    args, name = "", None
    for c in stream:
        for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            name = name or (d.function.name if d.function else None)
            args += (d.function.arguments or "") if d.function else ""
    assert name == "weather" and json.loads(args) == {"city": "Oslo"}, (model, name, args)
    print(f"chat ok {model}")

for model in embed_models:
    e = client.embeddings.create(model=model, input="a sentence to embed")
    assert len(e.data) == 1 and len(e.data[0].embedding) > 0, e
    print(f"embed ok {model}")
