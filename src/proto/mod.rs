//! Wire formats, pure: native frames and messages ([`msg`]), blob compression, and the
//! stock distcc protocol. No sockets here; readers and writers are generic.

pub mod msg;
