"""The bare minimum an event consumer does, as its own process: receive, one chat.update, delete.

The floor the bench compares the bot's event throughput with, on the same parts (moto's SQS, the local Slack,
the bot's own AWS and Slack clients). Run as one or more processes, like replicas, so that running two shows
whether the shared parts (moto, the local Slack, the machine's cores) let two consumers go twice as fast.

    python -m bench.bare_consumer QUEUE_URL SLACK_API_URL   (SLACK_BOT_TOKEN, AWS_* as for the bot)

Prints `ready` once its imports and clients are done, starts on a line on stdin, consumes until SIGTERM (the
bench sends it when the queue is empty), then prints how many messages it handled (duplicates included).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from bot.aws.clients import AwsClients
from bot.slack.web_client import make_web_client


async def consume(queue: str, slack_url: str, rate_scale: float) -> int:
    aws = AwsClients()
    client = make_web_client(os.environ["SLACK_BOT_TOKEN"], slack_url, rate_scale=rate_scale)
    posted = await client.chat_postMessage(channel="C0DEV", text="baseline")
    await aws.call("sqs", "get_queue_attributes", QueueUrl=queue, AttributeNames=["All"])  # warm the client
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # all consumers start together
    done = 0
    while not stop.is_set():
        resp = await aws.call("sqs", "receive_message", QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in resp.get("Messages", []):
            await client.chat_update(channel="C0DEV", ts=posted["ts"], text=f"event {done}")
            await aws.call("sqs", "delete_message", QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
            done += 1
    await client.close()
    return done


def main() -> None:
    queue, slack_url = sys.argv[1], sys.argv[2]
    done = asyncio.run(consume(queue, slack_url, float(os.environ.get("SLACK_RATE_SCALE", "1"))))
    print(f"handled {done}", flush=True)


if __name__ == "__main__":
    main()
