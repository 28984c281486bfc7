//! An engine served on loopback for the CLI tests that talk to it over the admin API.

/// A running in-memory engine on `127.0.0.1`.
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The engine (for inspecting state).
    pub engine: pomona::Engine,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Start an engine with admin API key `key`.
    pub async fn start(key: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let engine = pomona::Engine::builder()
            .public_url(&url)
            .build()
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router =
            pomona::http::Routes::new(&engine, pomona::http::HttpOptions::new().api_key(key))
                .router();
        let task = tokio::spawn(async move {
            let _ = pomona::http::server::serve(listener, router, None, async {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            url,
            engine,
            stop,
            task,
        }
    }

    /// Stop serving and shut the engine down.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.engine.shutdown().await;
    }
}
