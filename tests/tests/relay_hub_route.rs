//! Two sites that cannot reach each other meet through the hub: a publisher at the bureau and
//! a viewer at scenic-2 whose relay links to each other are down from the start.
//!
//! Real nodes (`huiyan` processes) and real WebRTC clients (`huiyan_tests::synth`), relay
//! traffic over emulated links. Takes about 30 s.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use huiyan_mesh::netem::LinkParams;
use huiyan_tests::relay::{RelayMesh, link_to, media_links};
use huiyan_tests::synth;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_that_cannot_reach_each_other_meet_through_the_hub() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mesh = RelayMesh::new(
        &[("hub", "hub"), ("bureau", "bureau"), ("scenic-2", "scenic")],
        &[("bureau", "mediation-centre", "mediation")],
        LinkParams::parse("4mbit,60ms").expect("link spec"),
    )
    .await;
    mesh.cut("scenic-2", "bureau", true);
    let _nodes = mesh.start_all();
    let (hub, bureau, scenic) = (mesh.web("hub"), mesh.web("bureau"), mesh.web("scenic-2"));

    let _publisher = synth::publish(bureau, "mediation-centre", "mediator", 30, 2, 800).await?;
    // The token itself needs the room's policy from the bureau: it comes through the hub.
    let viewer = synth::view(scenic, "bureau/mediation-centre", "tourist").await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while viewer.packets() < 200 {
        if Instant::now() > deadline {
            bail!("scenic-2 got {} packets through the hub", viewer.packets());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The hub carries the stream from the bureau to scenic-2; the direct link never came up.
    let (hub_links, bureau_links) = tokio::task::block_in_place(|| {
        Ok::<_, anyhow::Error>((media_links(hub)?, media_links(bureau)?))
    })?;
    let to_scenic = link_to(&hub_links, "scenic-2").expect("hub–scenic-2 link");
    let from_bureau = link_to(&hub_links, "bureau").expect("hub–bureau link");
    println!("hub → scenic-2: {to_scenic}\nhub ← bureau: {from_bureau}");
    let carries = |streams: &serde_json::Value| {
        streams.as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["kind"] == "video" && s["origin"] == "bureau")
        })
    };
    ensure!(carries(&to_scenic["sending"]), "{to_scenic}");
    ensure!(carries(&from_bureau["receiving"]), "{from_bureau}");
    ensure!(
        link_to(&bureau_links, "scenic-2").is_none_or(|l| l["up"] == false),
        "{bureau_links}"
    );
    Ok(())
}
