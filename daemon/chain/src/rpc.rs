//! The JSON-RPC calls the transmitter makes, behind a small trait so that its
//! schedule and fee logic run against a fake in unit tests and against alloy
//! (HTTP JSON-RPC, local EIP-1559 signing) in the node.

use super::abi::ISibylFeed;
use alloy_network::{
    Ethereum, EthereumWallet, NetworkTransactionBuilder, TransactionBuilder, eip2718::Encodable2718,
};
use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_provider::{Provider, ProviderBuilder, RootProvider};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolInterface};
use sibyl_aggregator::FeedId;
use std::future::Future;
use std::time::Duration;

/// A feed's value as the contract stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnChainValue {
    pub price: i128,
    /// The signed report's header timestamp.
    pub timestamp_ms: u64,
    /// The feed's own round id on chain (1 at its first value).
    pub round_id: u64,
}

/// A transaction's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub success: bool,
    pub gas_used: u64,
    pub effective_gas_price: u128,
}

/// What the chain thinks of a transaction before it is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The call reverts; `error` is the decoded custom error if known.
    #[error("the contract refuses the call: {error}")]
    Reverted { error: String },
    /// The node refused the raw transaction because its nonce is used.
    #[error("nonce too low: {0}")]
    NonceTooLow(String),
    /// A replacement did not raise the fees enough, or the same tx is already known.
    #[error("replacement refused: {0}")]
    Underpriced(String),
    #[error("{0}")]
    Other(String),
}

/// Fees for one EIP-1559 transaction, in wei per gas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fees {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// A transaction to sign and send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxParams {
    pub nonce: u64,
    pub gas_limit: u64,
    pub fees: Fees,
    pub calldata: Vec<u8>,
}

/// The chain as the transmitter uses it.
pub trait ChainRpc: Send + Sync + 'static {
    /// The transmitter's address.
    fn address(&self) -> Address;
    fn chain_id(&self) -> impl Future<Output = Result<u64, RpcError>> + Send;
    /// Stored values of `feeds`; `None` for a feed never set.
    fn latest_feeds(
        &self,
        feeds: &[FeedId],
    ) -> impl Future<Output = Result<Vec<Option<OnChainValue>>, RpcError>> + Send;
    /// Next nonce counting pending transactions.
    fn pending_nonce(&self) -> impl Future<Output = Result<u64, RpcError>> + Send;
    /// Suggested EIP-1559 fees (before the transmitter's cap).
    fn suggested_fees(&self) -> impl Future<Output = Result<Fees, RpcError>> + Send;
    fn balance(&self) -> impl Future<Output = Result<u128, RpcError>> + Send;
    /// Gas the call to the contract needs; `Reverted` if it would revert.
    fn estimate_gas(&self, calldata: &[u8]) -> impl Future<Output = Result<u64, RpcError>> + Send;
    /// Signs and sends; returns the transaction hash.
    fn send(&self, tx: &TxParams) -> impl Future<Output = Result<B256, RpcError>> + Send;
    fn receipt(&self, hash: B256)
    -> impl Future<Output = Result<Option<Receipt>, RpcError>> + Send;
}

/// Names a SibylFeed revert. (A leaf that another member landed first is
/// skipped by the contract, not reverted: races never revert a batch.)
pub fn decode_revert(data: &[u8]) -> String {
    match ISibylFeed::ISibylFeedErrors::abi_decode(data) {
        Ok(e) => format!("{e:?}"),
        Err(_) => format!("revert data 0x{}", hex::encode(data)),
    }
}

/// [`ChainRpc`] over HTTP JSON-RPC with alloy; signs locally.
pub struct AlloyRpc {
    provider: RootProvider<Ethereum>,
    wallet: EthereumWallet,
    address: Address,
    contract: Address,
    chain_id: u64,
}

impl AlloyRpc {
    /// `key` is the transmitter's secp256k1 secret; it stays in the wallet
    /// and is never logged.
    pub fn new(
        rpc_url: &str,
        contract: Address,
        chain_id: u64,
        key: PrivateKeySigner,
    ) -> Result<Self, RpcError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url: reqwest::Url = rpc_url
            .parse()
            .map_err(|e| RpcError::Other(format!("chain.rpc_url {rpc_url:?}: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| RpcError::Other(format!("cannot build the HTTP client: {e}")))?;
        let provider = ProviderBuilder::<_, _, Ethereum>::default().connect_reqwest(client, url);
        let address = key.address();
        Ok(Self {
            provider,
            wallet: EthereumWallet::from(key),
            address,
            contract,
            chain_id,
        })
    }

    fn request(&self, calldata: &[u8]) -> TransactionRequest {
        TransactionRequest::default()
            .with_from(self.address)
            .with_to(self.contract)
            .with_input(Bytes::copy_from_slice(calldata))
    }
}

fn other(e: impl std::fmt::Display) -> RpcError {
    RpcError::Other(e.to_string())
}

fn classify_send_error(e: alloy_provider::transport::TransportError) -> RpcError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("nonce too low") || lower.contains("nonce is too low") {
        RpcError::NonceTooLow(text)
    } else if lower.contains("underpriced") || lower.contains("already known") {
        RpcError::Underpriced(text)
    } else {
        RpcError::Other(text)
    }
}

fn reverted(e: &alloy_provider::transport::TransportError) -> Option<RpcError> {
    let data = e.as_error_resp()?.as_revert_data()?;
    Some(RpcError::Reverted {
        error: decode_revert(&data),
    })
}

impl ChainRpc for AlloyRpc {
    fn address(&self) -> Address {
        self.address
    }

    async fn chain_id(&self) -> Result<u64, RpcError> {
        self.provider.get_chain_id().await.map_err(other)
    }

    async fn latest_feeds(&self, feeds: &[FeedId]) -> Result<Vec<Option<OnChainValue>>, RpcError> {
        let calls = feeds.iter().map(|f| {
            let data = ISibylFeed::latestFeedCall {
                feedId: B256::from(f.to_bytes32()),
            }
            .abi_encode();
            let req = self.request(&data);
            async move {
                match self.provider.call(req).await {
                    Ok(out) => {
                        let v = ISibylFeed::latestFeedCall::abi_decode_returns(&out)
                            .map_err(|e| other(format!("latestFeed({f}) returned garbage: {e}")))?;
                        Ok(Some(OnChainValue {
                            price: i128::try_from(v.price).map_err(|_| {
                                other(format!("latestFeed({f}): price outside i128"))
                            })?,
                            timestamp_ms: v.timestampMs,
                            round_id: v.roundId,
                        }))
                    }
                    Err(e) => match reverted(&e) {
                        Some(RpcError::Reverted { error, .. })
                            if error.starts_with("NoDataPresent") =>
                        {
                            Ok(None)
                        }
                        _ => Err(other(format!("latestFeed({f}): {e}"))),
                    },
                }
            }
        });
        futures::future::try_join_all(calls).await
    }

    async fn pending_nonce(&self) -> Result<u64, RpcError> {
        self.provider
            .get_transaction_count(self.address)
            .pending()
            .await
            .map_err(other)
    }

    async fn suggested_fees(&self) -> Result<Fees, RpcError> {
        let est = self.provider.estimate_eip1559_fees().await.map_err(other)?;
        Ok(Fees {
            max_fee_per_gas: est.max_fee_per_gas,
            max_priority_fee_per_gas: est.max_priority_fee_per_gas,
        })
    }

    async fn balance(&self) -> Result<u128, RpcError> {
        let b: U256 = self
            .provider
            .get_balance(self.address)
            .await
            .map_err(other)?;
        Ok(u128::try_from(b).unwrap_or(u128::MAX))
    }

    async fn estimate_gas(&self, calldata: &[u8]) -> Result<u64, RpcError> {
        self.provider
            .estimate_gas(self.request(calldata))
            .await
            .map_err(|e| reverted(&e).unwrap_or_else(|| other(e)))
    }

    async fn send(&self, tx: &TxParams) -> Result<B256, RpcError> {
        let req = self
            .request(&tx.calldata)
            .with_chain_id(self.chain_id)
            .with_nonce(tx.nonce)
            .with_gas_limit(tx.gas_limit)
            .with_max_fee_per_gas(tx.fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(tx.fees.max_priority_fee_per_gas);
        let envelope = req
            .build(&self.wallet)
            .await
            .map_err(|e| other(format!("cannot sign the transaction: {e}")))?;
        let raw = envelope.encoded_2718();
        let pending = self
            .provider
            .send_raw_transaction(&raw)
            .await
            .map_err(classify_send_error)?;
        Ok(*pending.tx_hash())
    }

    async fn receipt(&self, hash: B256) -> Result<Option<Receipt>, RpcError> {
        use alloy_network::ReceiptResponse;
        let r = self
            .provider
            .get_transaction_receipt(hash)
            .await
            .map_err(other)?;
        Ok(r.map(|r| Receipt {
            success: r.status(),
            gas_used: r.gas_used(),
            effective_gas_price: r.effective_gas_price(),
        }))
    }
}
