"""The official Anthropic Python SDK against the gateway: only base_url changes.
argv: base_url (the gateway's /anthropic), then models (`provider/model`, bare names or aliases).
Each model: a plain message, `messages.stream` (text_stream and the final message), a tool-use
round trip plain and streamed. Then errors in Anthropic's shape."""
import sys

import anthropic

base, *models = sys.argv[1:]
client = anthropic.Anthropic(base_url=base, api_key="sk-ant-client-token", max_retries=0)

tools = [{
    "name": "weather",
    "description": "Weather by city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]

for model in models:
    msg = client.messages.create(
        model=model, max_tokens=100, system="Be brief.",
        messages=[{"role": "user", "content": f"echo:plain {model}"}])
    assert msg.type == "message" and msg.role == "assistant", msg
    assert msg.content[0].type == "text" and msg.content[0].text == f"plain {model}", msg
    assert msg.stop_reason == "end_turn", msg
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, msg.usage

    with client.messages.stream(
        model=model, max_tokens=100,
        messages=[{"role": "user", "content": [{"type": "text", "text": "echo:streamed words arrive"}]}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() == "streamed words arrive", (model, text)
    assert final.content[0].text == text, final
    assert final.stop_reason == "end_turn", final
    assert final.usage.output_tokens > 0, final.usage

    ask = [{"role": "user", "content": 'tool:weather {"city": "Oslo"}'}]
    first = client.messages.create(model=model, max_tokens=100, tools=tools, messages=ask)
    assert first.stop_reason == "tool_use", first
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "weather" and call.input == {"city": "Oslo"}, call
    second = client.messages.create(model=model, max_tokens=100, tools=tools, messages=ask + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "snow, -3 C"}]},
    ])
    assert "snow, -3 C" in second.content[0].text, second

    # Tool input arrives as input_json_delta pieces; the SDK's accumulated message has it whole.
    with client.messages.stream(model=model, max_tokens=100, tools=tools, messages=ask) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.name == "weather" and call.input == {"city": "Oslo"}, final
    assert final.stop_reason == "tool_use", final
    print(f"anthropic ok {model}")

try:
    client.messages.create(model=models[0], max_tokens=10, messages=[
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": [{"type": "video", "url": "x"}]}])
    raise SystemExit("expected a 400")
except anthropic.BadRequestError as e:
    assert e.status_code == 400, e
    assert e.body["type"] == "error" and e.body["error"]["type"] == "invalid_request_error", e.body
    assert e.body["error"]["message"].startswith("messages.2.content.0.type:"), e.body
try:
    client.messages.create(model="nope/x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected an error for an unknown provider")
except anthropic.APIStatusError as e:
    assert e.body["type"] == "error", e.body
print("anthropic errors ok")
