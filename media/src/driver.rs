//! The IO driver: sockets, webrtc-rs peer connections and the SFU core.
// TODO(#4): the driver lands in the next commit.
