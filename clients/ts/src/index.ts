// Sibyl client SDK: read feeds and history from one or more API endpoints,
// subscribe to signed reports with resume and de-duplication, verify reports
// and single feeds locally (FROST Ed25519 and secp256k1-evm), and build the
// pull calldata for SibylFeed.submitFeeds; sign margin commands with an
// account owner's key and submit them.

export * from './hex.js';
export * from './json.js';
export * from './types.js';
export * from './encoding.js';
export * from './verify.js';
export * from './pull.js';
export * from './margin.js';
export * from './client.js';
export * from './stream.js';
