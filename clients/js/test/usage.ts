// Compiled by types.test.mjs with `tsc --strict --noEmit`: the declarations in realtime.d.ts
// describe the API as the README and docs/clients.md use it.
import { connect, type RealtimeEvent, type ResetInfo, type Status } from '../realtime.js';

interface Post { id: string; title: string; version: number }

const client = connect({
  url: 'http://127.0.0.1:8888',
  getToken: async () => 'token',
  transports: ['websocket', 'sse', 'poll'],
  backoff: { base: 250, max: 10000 },
  onReset: async (info: ResetInfo) => (info.oldest_seq ?? 0) + 1,
  onStatus: (status: Status) => console.log(status.state, status.attempt, status.transport),
  onError: (error: Error) => console.error(error.message),
});
const subscription = client.subscribe<Post>(['posts'], (event: RealtimeEvent<Post>) => {
  const title: string = event.data.title;
  console.log(event.seq, event.type, title);
}, { since: 10 });
const stop: () => void = client.onStatus((status) => console.log(status.state));
const seq: number | null = client.seq;
console.log(seq, client.epoch);
subscription.unsubscribe();
client.unsubscribe('products');
stop();
client.close();
