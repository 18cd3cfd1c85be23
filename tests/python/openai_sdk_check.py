"""Drive the gateway with the official OpenAI Python SDK: only base_url changes."""
import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="sk-client-token", max_retries=0)

resp = client.chat.completions.create(
    model="openai/gpt-4o-mini",
    messages=[{"role": "user", "content": "echo:hello from python"}],
)
assert resp.choices[0].message.content == "hello from python", resp
assert resp.usage.total_tokens > 0, resp.usage
print("plain ok")

stream = client.chat.completions.create(
    model="openai/gpt-4o-mini",
    messages=[{"role": "user", "content": "echo:streaming works fine"}],
    stream=True,
)
text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
assert text.strip() == "streaming works fine", repr(text)
print("stream ok")

try:
    client.chat.completions.create(model="nope/x", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected an error for an unknown provider")
except Exception as e:  # openai.BadRequestError
    assert getattr(e, "status_code", None) == 400, e
print("error ok")
