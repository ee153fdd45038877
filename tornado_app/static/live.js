// The live example page: the newest posts and one product's stock (?product=<id>), kept current
// by the realtime client. ?transports=sse,poll picks the transports to try, in order.
import { connect } from '/examples/live/realtime.js';

const params = new URLSearchParams(location.search);
const productId = params.get('product');
const transports = params.get('transports') ? params.get('transports').split(',') : undefined;
const $ = (id) => document.getElementById(id);

// What the page shows, by id. Events and the initial load may arrive in either order, so each
// post keeps the highest version seen and a deleted id stays deleted.
const posts = new Map();
const deleted = new Set();
const live = { events: [], receivedAt: [], resets: 0, status: null, client: null, product: null };
window.live = live; // for the browser test and for curious developers

function upsertPost(post) {
  if (deleted.has(post.id)) return;
  const known = posts.get(post.id);
  if (!known || known.version <= post.version) posts.set(post.id, post);
}

function renderPosts() {
  const list = $('posts');
  const newest = [...posts.values()].sort((a, b) => b.created_at.localeCompare(a.created_at)
    || b.id.localeCompare(a.id)).slice(0, 50);
  list.replaceChildren(...newest.map((post) => {
    const item = document.createElement('li');
    item.dataset.id = post.id;
    const title = document.createElement('strong');
    title.textContent = post.title;
    const meta = document.createElement('small');
    meta.textContent = ` by ${post.author.username} · ${post.comment_count} comments`;
    item.append(title, meta);
    return item;
  }));
}

function renderProduct() {
  const product = live.product;
  $('product').hidden = !product;
  if (!product) return;
  $('product-name').textContent = product.deleted ? `${product.name} (deleted)` : product.name;
  $('product-sku').textContent = product.sku;
  $('stock').textContent = String(product.stock);
}

function onPostEvent(event) {
  live.events.push(event);
  live.receivedAt.push(Date.now());
  if (event.type === 'post.deleted') {
    deleted.add(event.data.id);
    posts.delete(event.data.id);
  } else {
    upsertPost(event.data);
  }
  renderPosts();
}

function onProductEvent(event) {
  live.events.push(event);
  live.receivedAt.push(Date.now());
  const product = live.product;
  if (!product || event.data.id !== product.id) return;
  if (event.type === 'product.deleted') product.deleted = true;
  else if (event.data.version >= product.version) live.product = event.data;
  renderProduct();
}

function showStatus(status) {
  live.status = status;
  const label = $('status');
  label.dataset.state = status.state;
  label.textContent = status.state === 'open' ? `live (${status.transport})`
    : status.state === 'reconnecting' ? `reconnecting (attempt ${status.attempt})` : status.state;
}

async function load() {
  const answer = await fetch('/api/v1/posts?limit=50');
  for (const post of (await answer.json()).items) upsertPost(post);
  renderPosts();
  if (productId) {
    const product = await fetch(`/api/v1/products/${encodeURIComponent(productId)}`);
    if (product.ok) {
      const current = await product.json();
      if (!live.product || live.product.version < current.version) live.product = current;
    }
    renderProduct();
  }
}

// Subscribed first, loaded once connected (the client's cursor is fixed by then): every change
// after the cursor arrives as an event, and one the load already shows is known by its version.
let loaded = false;
const client = connect({
  transports,
  onStatus: (status) => {
    showStatus(status);
    if (status.state === 'open' && !loaded) {
      loaded = true;
      load().catch((error) => console.error('loading failed', error));
    }
  },
  // The cursor expired: forget what is shown and load it again once resubscribed from "now".
  onReset: () => {
    live.resets += 1;
    posts.clear();
    deleted.clear();
    loaded = false;
  },
});
live.client = client;
showStatus(client.status);
client.subscribe('posts', onPostEvent);
if (productId) client.subscribe('products', onProductEvent);
