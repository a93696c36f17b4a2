{
  "targets": [
    {
      "target_name": "takeover",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/packet_parse.cc",
        "native/segment_object.cc",
        "native/tcp_flows.cc",
        "native/packet_capture.cc",
        "native/packet_ring.cc",
        "native/forge.cc",
        "native/sockdiag.cc",
        "native/proc_fds.cc",
        "native/pidfd.cc",
        "native/pidfd_watch.cc",
        "native/socket_ops.cc",
        "native/netlink_addr.cc",
        "native/neigh_announce.cc",
        "native/address_probe.cc",
        "native/sg_io.cc",
        "native/tcp_repair.cc",
        "native/file_lock.cc",
        "native/splice_relay.cc",
        "native/clock.cc",
        "native/nf_queue.cc",
        "native/spawn.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [
        ["OS!='linux'", { "type": "none" }]
      ]
    }
  ]
}
