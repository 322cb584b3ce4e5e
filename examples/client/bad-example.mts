// What the types must refuse (checked to fail by pollgate's test suite).
import PollgateClient from "./pollgate-client.mjs";

new PollgateClient({ url: "/api/poll/" }); // no channel
new PollgateClient({ url: "/api/poll/", channel: "c" }).on("messages", () => {}); // no such event
