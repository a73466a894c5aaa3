//! Token attacks with tokens forged by an independent implementation (tests/attacks/forge_tokens.py, Python's
//! standard library): every forged, expired, premature, mis-signed or tampered token is refused by the
//! WebSocket endpoint, the admin API and the node registry; valid ones are accepted (so the test can fail).

use homeroom_shared::media::NodeHeartbeat;
use homeroom_shared::protocol::Role;
use homeroom_tests::client::{Client, Connect};
use homeroom_tests::edge::Edge;
use homeroom_tests::media::MediaNode;
use homeroom_tests::repo_root;
use homeroom_tests::tokens::{dev_var, now_secs, Minter};
use std::collections::BTreeMap;

fn forged() -> BTreeMap<String, String> {
    let output = std::process::Command::new("python3")
        .arg(repo_root().join("tests/attacks/forge_tokens.py"))
        .arg(dev_var("JWT_SECRET").unwrap())
        .arg(dev_var("NODE_SECRET").unwrap())
        .arg(now_secs().to_string())
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("a JSON map of tokens")
}

#[tokio::test]
async fn forged_tokens_are_refused_everywhere_and_valid_ones_accepted() {
    let edge = Edge::start().await.expect("edge starts");
    let http = reqwest::Client::new();
    let tokens = forged();
    // Every token the forger made is sent somewhere below (checked at the end), so none is skipped silently.
    let mut used: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    let user_attacks: Vec<&String> = tokens
        .keys()
        .filter(|k| !["valid_", "node_", "media_", "control_"].iter().any(|prefix| k.starts_with(prefix)))
        .collect();
    assert!(user_attacks.len() >= 15);

    for name in &user_attacks {
        used.insert(name.as_str());
        let token = &tokens[*name];
        let err = Client::connect(&Connect::new(&edge.ws(), "vault", token)).await.expect_err(name);
        assert_eq!(err.status(), Some(401), "{name} over WebSocket: {err}");
        let mut bearer = Connect::new(&edge.ws(), "vault", token);
        bearer.bearer = true;
        assert_eq!(Client::connect(&bearer).await.expect_err(name).status(), Some(401), "{name} as Bearer");
        let admin = http.get(format!("{}/v1/rooms/vault", edge.http())).bearer_auth(token).send().await.unwrap();
        assert_eq!(admin.status().as_u16(), 401, "{name} on the admin API");
        let hb = NodeHeartbeat {
            id: "mallory".into(),
            region: "eu-west".into(),
            url: "http://127.0.0.1:9".into(),
            capacity: 1,
            load: 0,
            draining: false,
        };
        if name.as_str() == "user_signed_with_node_secret" {
            continue; // signed with the node secret: the registry's business is whether it is a node's (below)
        }
        let beat =
            http.post(format!("{}/v1/nodes/heartbeat", edge.http())).bearer_auth(token).json(&hb).send().await.unwrap();
        assert!(matches!(beat.status().as_u16(), 401 | 403), "{name} as a node heartbeat: {}", beat.status());
    }
    // Media and control tokens signed with NODE_SECRET (or forged on it) are not user tokens. (The forger's
    // `*_wrong_key` and `control_user_token` are signed with the user secret: user tokens by construction.)
    for name in [
        "media_valid",
        "media_alg_none",
        "media_expired",
        "media_other_node",
        "media_tampered_perms",
        "media_sub_edge",
        "media_sub_node",
        "control_valid",
    ] {
        let err = Client::connect(&Connect::new(&edge.ws(), "vault", &tokens[name])).await.expect_err(name);
        assert_eq!(err.status(), Some(401), "{name} over WebSocket: {err}");
        let admin =
            http.get(format!("{}/v1/rooms/vault", edge.http())).bearer_auth(&tokens[name]).send().await.unwrap();
        assert_eq!(admin.status().as_u16(), 401, "{name} on the admin API");
    }

    // Node tokens: only NODE_SECRET-signed, unexpired, matching ones renew a lease.
    for (name, expected) in
        [("node_wrong_key", 401), ("node_alg_none", 401), ("node_expired", 401), ("media_sub_node", 403)]
    {
        let hb = NodeHeartbeat {
            id: "evil-node".into(),
            region: "eu-west".into(),
            url: "http://127.0.0.1:9".into(),
            capacity: 1,
            load: 0,
            draining: false,
        };
        let beat = http
            .post(format!("{}/v1/nodes/heartbeat", edge.http()))
            .bearer_auth(&tokens[name])
            .json(&hb)
            .send()
            .await
            .unwrap();
        assert_eq!(beat.status().as_u16(), expected, "{name}");
        used.insert(name);
    }
    let valid_hb = NodeHeartbeat {
        id: "evil-node".into(),
        region: "eu-west".into(),
        url: "http://127.0.0.1:9".into(),
        capacity: 1,
        load: 0,
        draining: false,
    };
    let ok = http
        .post(format!("{}/v1/nodes/heartbeat", edge.http()))
        .bearer_auth(&tokens["valid_node"])
        .json(&valid_hb)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200, "the independent implementation's valid node token works");
    used.insert("valid_node");
    // A node token is not a user token, and a user token is not an admin token.
    let node_as_user = Client::connect(&Connect::new(&edge.ws(), "vault", &tokens["valid_node"])).await;
    assert_eq!(node_as_user.expect_err("node token as user token").status(), Some(401));
    let student_admin =
        http.get(format!("{}/v1/rooms/vault", edge.http())).bearer_auth(&tokens["valid_student"]).send().await.unwrap();
    assert_eq!(student_admin.status().as_u16(), 403);

    // The valid user tokens from the independent implementation are accepted.
    let valid = Client::connect(&Connect::new(&edge.ws(), "vault", &tokens["valid_student"])).await.expect("valid");
    assert_eq!(valid.welcome.you.role, Role::Student);
    let admin =
        http.get(format!("{}/v1/rooms/vault", edge.http())).bearer_auth(&tokens["valid_admin"]).send().await.unwrap();
    assert_eq!(admin.status().as_u16(), 200);
    used.extend(["valid_student", "valid_admin"]);

    // The media node: forged media tokens cannot open a session, forged control tokens cannot moderate.
    let node = MediaNode::start("attack-node", "eu-west", &edge.http()).expect("media node starts");
    node.wait_healthy(std::time::Duration::from_secs(10)).await.unwrap();
    let offer = "v=0\r\n"; // not a usable offer: a valid token gets past authentication and then 400
    for (name, expected) in [
        ("media_wrong_key", 401),
        ("media_alg_none", 401),
        ("media_expired", 401),
        ("media_tampered_perms", 401),
        ("media_other_node", 403),
        ("valid_admin", 401),
        ("media_valid", 400),
    ] {
        let status = http
            .post(format!("{}/v1/sessions", node.url))
            .bearer_auth(&tokens[name])
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, expected, "{name} at the media node's /v1/sessions");
        used.insert(name);
    }
    let command = serde_json::json!({"type": "close_room", "room": "default/vault"});
    // Each refusal has its own status: a signature the node cannot verify is 401; a verified token that is
    // not the edge's (a media token, one with media claims) is 403.
    for (name, expected) in [
        ("control_wrong_key", 401),
        ("control_user_token", 401),
        ("media_valid", 403),
        ("media_sub_edge", 403),
        ("control_valid", 200),
    ] {
        let status = http
            .post(format!("{}/v1/control", node.url))
            .bearer_auth(&tokens[name])
            .json(&command)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, expected, "{name} at /v1/control");
        used.insert(name);
    }
    let unused: Vec<&String> = tokens.keys().filter(|k| !used.contains(k.as_str())).collect();
    assert!(unused.is_empty(), "forged tokens no check sent anywhere: {unused:?}");

    // Tenants and room scopes: an admin of another tenant sees its own (empty) room, not ours.
    let m = Minter::dev().unwrap();
    let other_admin = m.tenant_token("eve", Role::Admin, "acme");
    let theirs: serde_json::Value = http
        .get(format!("{}/v1/rooms/vault", edge.http()))
        .bearer_auth(&other_admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["room"], "acme/vault");
    assert_eq!(theirs["participants"].as_array().map(Vec::len), Some(0));
    let kick = http
        .post(format!("{}/v1/rooms/vault/kick", edge.http()))
        .bearer_auth(&other_admin)
        .json(&serde_json::json!({"id": "mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kick.status().as_u16(), 404, "another tenant cannot reach our participant");
}
