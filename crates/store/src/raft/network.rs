//! Raft transport. A kumo store is today a one-voter group: the leader never has a peer to
//! reach, and a request for one fails as unreachable. Issue "store HA" adds the peer
//! transport (gRPC between members) behind this same factory.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::{MemberNode, TypeConfig};

/// Creates connections to peers.
#[derive(Debug, Clone, Default)]
pub struct Network;

/// A connection to one peer.
#[derive(Debug)]
pub struct Peer {
    target: u64,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, _node: &MemberNode) -> Peer {
        Peer { target }
    }
}

impl Peer {
    fn unreachable(&self) -> Unreachable {
        Unreachable::new(&std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!(
                "member {:x}: this store runs as a single voter and has no peer transport",
                self.target
            ),
        ))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, MemberNode, RaftError<u64>>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, MemberNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, MemberNode, RaftError<u64>>> {
        Err(RPCError::Network(NetworkError::new(&self.unreachable())))
    }
}
