"""The official OpenAI Python SDK's Responses API (`client.responses.create`) against the
gateway: only base_url changes. argv: base_url, then models. Each model: plain (a string and
items), streaming, a function-call round trip plain and streamed. Then errors."""
import json
import sys

import openai
from openai import OpenAI

base, *models = sys.argv[1:]
client = OpenAI(base_url=base, api_key="sk-client-token", max_retries=0)

tools = [{
    "type": "function", "name": "weather", "description": "Weather by city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]

for model in models:
    r = client.responses.create(model=model, input=f"echo:plain {model}", instructions="Be brief.")
    assert r.object == "response" and r.status == "completed", r
    assert r.output_text == f"plain {model}", r
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage

    r = client.responses.create(model=model, input=[
        {"role": "user", "content": [{"type": "input_text", "text": "echo:from items"}]}])
    assert r.output_text == "from items", r

    events = list(client.responses.create(model=model, input="echo:streamed words arrive", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "streamed words arrive", (model, text)
    assert events[-1].response.usage.output_tokens > 0, events[-1]
    assert events[-1].response.output_text == text, events[-1]

    ask = [{"role": "user", "content": 'tool:weather {"city": "Oslo"}'}]
    first = client.responses.create(model=model, input=ask, tools=tools)
    call = next(o for o in first.output if o.type == "function_call")
    assert call.name == "weather" and json.loads(call.arguments) == {"city": "Oslo"}, first
    second = client.responses.create(model=model, tools=tools, input=ask + [
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "snow, -3 C"},
    ])
    assert "snow, -3 C" in second.output_text, second

    events = list(client.responses.create(model=model, input=ask, tools=tools, stream=True))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Oslo"}, (model, args)
    done = [e for e in events if e.type == "response.output_item.done"]
    assert done and done[-1].item.type == "function_call" and done[-1].item.name == "weather", done
    print(f"responses ok {model}")

try:
    client.responses.create(model=models[0], input="x", previous_response_id="resp_123")
    raise SystemExit("expected a 400")
except openai.BadRequestError as e:
    assert e.status_code == 400, e
    assert "does not store responses" in e.message, e.message
    assert e.body["param"] == "previous_response_id", e.body
try:
    client.responses.create(model=models[0], input=[{"role": "user", "content": [{"type": "input_audio"}]}])
    raise SystemExit("expected a 400")
except openai.BadRequestError as e:
    assert e.body["param"] == "input[0].content[0].type", e.body
print("responses errors ok")
