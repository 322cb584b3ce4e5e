// The ES module entry: the same client as pollgate-client.js (a UMD file,
// which Node loads as CommonJS), as the default export and by name.
import PollgateClient from "./pollgate-client.js";

export { PollgateClient };
export default PollgateClient;
