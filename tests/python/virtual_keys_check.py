"""The official OpenAI Python SDK with a virtual key as its api_key.

argv: base_url, team-a's key (rpm 3, openai/gpt-4o-mini only), team-b's key (daily budget of
10 tokens). Prints one line per check; any failure raises.
"""
import sys

import openai
from openai import OpenAI

base, key_a, key_b = sys.argv[1:4]
MSG = [{"role": "user", "content": "echo:one two three four"}]

a = OpenAI(base_url=base, api_key=key_a, max_retries=0)
resp = a.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)
assert resp.choices[0].message.content == "one two three four", resp
print("allowed ok")

stream = a.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG, stream=True)
text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
assert text.strip() == "one two three four", repr(text)
print("stream ok")

try:
    OpenAI(base_url=base, api_key=key_a + "x", max_retries=0).chat.completions.create(
        model="openai/gpt-4o-mini", messages=MSG)
    raise SystemExit("a wrong key was let in")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and key_a not in str(e), e
print("wrong key ok")

try:
    a.chat.completions.create(model="openai/gpt-4o", messages=MSG)
    raise SystemExit("a forbidden model was served")
except openai.PermissionDeniedError as e:
    msg = e.body["message"]
    assert "key 'team-a'" in msg and "'openai/gpt-4o'" in msg and key_a not in msg, msg
print("forbidden model ok")

a.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)  # the 3rd of 3 a minute
try:
    a.chat.completions.create(model="openai/gpt-4o-mini", messages=MSG)
    raise SystemExit("the 4th request of the minute was served")
except openai.RateLimitError as e:
    assert int(e.response.headers["retry-after"]) >= 1, e.response.headers
    assert "3 requests per minute" in e.body["message"], e.body
print("rate limit ok")

b = OpenAI(base_url=base, api_key=key_b, max_retries=0)
b.chat.completions.create(model="openai/gpt-4o", messages=MSG)  # 8 tokens of 10
stream = b.chat.completions.create(model="openai/gpt-4o", messages=MSG, stream=True)
assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()
try:  # 16 of 10: the streamed answer's usage counted
    b.chat.completions.create(model="openai/gpt-4o", messages=MSG)
    raise SystemExit("a request past the budget was served")
except openai.RateLimitError as e:
    msg = e.body["message"]
    assert "daily token budget (16 of 10 tokens)" in msg and "resets at" in msg, msg
print("budget ok")
