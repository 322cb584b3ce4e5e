// A typed use of pollgate-client as an ES module: `tsc --noEmit` accepts it.
import PollgateClient, { type Message, type MessageMeta, type PollgateError } from "./pollgate-client.mjs";

const client = new PollgateClient({ url: "/api/poll/", channel: "orders", timeout: 25, transport: "auto" });

client
  .on("message", (data: Message, meta: MessageMeta) => {
    const when: number = meta.timestamp;
    const id: string = data.id;
    console.log(id, when, meta.gap);
  })
  .on("gap", (meta) => console.log("resync after", meta.timestamp))
  .on("error", (e: PollgateError) => console.log(e.status ?? "network", e.message))
  .on("connected", () => console.log("online", client.transport))
  .on("disconnected", () => console.log("offline"))
  .start();

const cursor: string | undefined = client.since;
console.log(cursor);
client.stop();
